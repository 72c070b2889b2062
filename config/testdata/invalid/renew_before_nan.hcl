instance "cloudsql" "orders" {
  project      = "my-proj"
  instance     = "orders-pg"
  renew_before = "NaN%"
  sink "file" { dir = "/var/lib/dbcert-agent/orders" }
}
