instance "alloydb" "analytics" {
  project  = "my-proj"
  location = "us-central1"
  cluster  = "analytics"
  sink "file" {
    dir   = "/var/lib/dbcert-agent/analytics"
    token = true
  }
}
