instance "alloydb" "analytics" {
  project       = "my-proj"
  location      = "us-central1"
  cluster       = "analytics"
  cert_duration = "25h"
  sink "file" { dir = "/var/lib/dbcert-agent/analytics" }
}
