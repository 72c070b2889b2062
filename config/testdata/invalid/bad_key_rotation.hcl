instance "cloudsql" "orders" {
  project      = "my-proj"
  instance     = "orders-pg"
  key_rotation = "sometimes"
  sink "file" { dir = "/var/lib/dbcert-agent/orders" }
}
