instance "cloudsql" "orders" {
  project  = "my-proj"
  instance = "orders-pg"
  connection {
    user    = "app"
    ip_type = "privat"
  }
  sink "file" {
    dir = "/var/lib/dbcert-agent/orders"

  }
}
