instance "cloudsql" "orders" {
  project  = "my-proj"
  instance = "orders-pg"
  connection {
    user   = "app"
    dbname = "app\u0000"
  }
  sink "file" {
    dir = "/var/lib/dbcert-agent/orders"

  }
}
