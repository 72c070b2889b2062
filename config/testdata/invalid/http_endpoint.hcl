instance "cloudsql" "orders" {
  project      = "my-proj"
  instance     = "orders-pg"
  api_endpoint = "http://sqladmin.example.com/"
  sink "file" { dir = "/var/lib/dbcert-agent/orders" }
}
