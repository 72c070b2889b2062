instance "alloydb" "analytics" {
  project  = "my-proj"
  location = "us-central1"
  cluster  = "analytics"
  connection {
    user = "app"
  }
  sink "file" { dir = "/var/lib/dbcert-agent/analytics" }
}
