instance "cloudsql" "orders" {
  project  = "my-proj"
  instance = "orders-pg"
  ip_type = "public"
  connection {
    user    = "app"
    ip_type = "private"
  }
  sink "file" {
    dir = "/var/lib/dbcert-agent/orders"

  }
}
