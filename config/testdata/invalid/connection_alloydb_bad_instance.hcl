instance "alloydb" "analytics" {
  project  = "my-proj"
  location = "us-central1"
  cluster  = "analytics"
  connection {
    user     = "app"
    instance = "projects/my-proj/locations/us-central1/clusters/analytics/instances/primary"
  }
  sink "file" { dir = "/var/lib/dbcert-agent/analytics" }
}
