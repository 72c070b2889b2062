instance "cloudsql" "orders" {
  project      = "my-proj"
  instance     = "orders-pg"
  renew_befor  = "33%"
  sink "file" { dir = "/var/lib/dbcert-agent/orders" }
}
