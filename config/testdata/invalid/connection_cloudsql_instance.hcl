instance "cloudsql" "orders" {
  project  = "my-proj"
  instance = "orders-pg"
  connection {
    user     = "app"
    instance = "primary"
  }
  sink "file" {
    dir = "/var/lib/dbcert-agent/orders"

  }
}
