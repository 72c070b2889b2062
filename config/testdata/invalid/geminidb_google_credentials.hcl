credentials "google" "gcp" {
  credentials_file = "/etc/dbcert-agent/sa.json"
}

instance "geminidb" "cache" {
  project_id  = "0123456789abcdef0123456789abcdef"
  instance_id = "a1b2c3d4e5f64a7b8c9d0e1f2a3b4c5din06"
  credentials = "gcp"
  sink "file" { dir = "/etc/ssl/geminidb-cache" }
}
