instance "cloudsql" "orders" {
  project     = "my-proj"
  instance    = "orders-pg"
  api_version = "v1beta"
  sink "file" { dir = "/var/lib/dbcert-agent/orders" }
}
