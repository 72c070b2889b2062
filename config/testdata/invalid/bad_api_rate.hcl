agent {
  api_rate = "180/min"
}

instance "cloudsql" "orders" {
  project  = "my-proj"
  instance = "orders-pg"
  sink "file" { dir = "/var/lib/dbcert-agent/orders" }
}
