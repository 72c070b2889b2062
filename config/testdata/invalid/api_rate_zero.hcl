agent {
  api_rate = "0/s"
}

instance "cloudsql" "orders" {
  project  = "my-proj"
  instance = "orders-pg"
  sink "file" { dir = "/var/lib/dbcert-agent/orders" }
}
