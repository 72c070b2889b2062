instance "cloudsql" "orders" {
  project  = "my-proj"
  instance = "orders-pg"
  sink "file" { dir = "/var/lib/dbcert-agent/shared" }
}

instance "cloudsql" "billing" {
  project  = "my-proj"
  instance = "billing-pg"
  sink "file" { dir = "/var/lib/dbcert-agent/shared/" }
}
