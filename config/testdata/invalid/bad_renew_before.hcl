instance "cloudsql" "orders" {
  project      = "my-proj"
  instance     = "orders-pg"
  renew_before = "150%"
  sink "file" { dir = "/var/lib/dbcert-agent/orders" }
}
