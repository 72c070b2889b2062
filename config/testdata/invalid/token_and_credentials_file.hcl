credentials "google" "default" {
  credentials_file = "/etc/dbcert-agent/sa.json"
  token_file       = "/run/secrets/gcp-token"
}

instance "cloudsql" "orders" {
  project  = "my-proj"
  instance = "orders-pg"
  sink "file" { dir = "/var/lib/dbcert-agent/orders" }
}
