instance "cloudsql" "orders" {
  project  = "my-proj"
  instance = "orders-pg"
  schedule = "@every -5m"
  sink "file" { dir = "/var/lib/dbcert-agent/orders" }
}
