instance "cloudsql" "orders" {
  project  = "my-proj"
  instance = "orders-pg"
  schedule = "0 3 * *"
  sink "file" { dir = "/var/lib/dbcert-agent/orders" }
}
