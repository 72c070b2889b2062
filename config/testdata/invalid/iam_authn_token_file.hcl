credentials "google" "default" {
  token_file = "/run/secrets/gcp-token"
}

instance "cloudsql" "orders" {
  project   = "my-proj"
  instance  = "orders-pg"
  iam_authn = true
  sink "file" { dir = "/var/lib/dbcert-agent/orders" }
}
