credentials "google" "default" {
  credentials_file = "/etc/dbcert-agent/sa.json"
}

instance "cloudsql" "orders" {
  project     = "my-proj"
  instance    = "orders-pg"
  credentials = "defualt"
  sink "file" { dir = "/var/lib/dbcert-agent/orders" }
}
