instance "cloudsql" "orders" {
  project  = "my-proj"
  instance = "orders-pg"
  connection {
    user = "app"
    port = 70000
  }
  sink "file" {
    dir = "/var/lib/dbcert-agent/orders"

  }
}
