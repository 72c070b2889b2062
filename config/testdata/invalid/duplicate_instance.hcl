instance "cloudsql" "orders" {
  project  = "my-proj"
  instance = "orders-pg"
  sink "file" { dir = "/var/lib/dbcert-agent/orders" }
}

instance "cloudsql" "orders" {
  project  = "my-proj"
  instance = "orders-pg-2"
  sink "file" { dir = "/var/lib/dbcert-agent/orders-2" }
}
