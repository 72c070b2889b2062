instance "cloudsql" "orders" {
  project  = "my-proj"
  instance = "orders-pg"
  schedule = "CRON_TZ=UTC @every -5m"
  sink "file" { dir = "/var/lib/dbcert-agent/orders" }
}
