instance "cloudsql" "orders" {
  instance = "orders-pg"
  sink "file" { dir = "/var/lib/dbcert-agent/orders" }
}
