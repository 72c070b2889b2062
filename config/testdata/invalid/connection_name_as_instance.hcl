instance "cloudsql" "orders" {
  project  = "my-proj"
  instance = "my-proj:us-central1:orders-pg"
  sink "file" { dir = "/var/lib/dbcert-agent/orders" }
}
