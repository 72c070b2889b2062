instance "cloudsql" "orders" {
  project  = "my-proj"
  instance = "orders-pg"
  sinks "file" { dir = "/var/lib/dbcert-agent/orders" }
}
