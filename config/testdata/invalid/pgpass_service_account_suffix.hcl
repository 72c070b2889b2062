instance "cloudsql" "orders" {
  project  = "my-proj"
  instance = "orders-pg"
  sink "file" {
    dir    = "/var/lib/dbcert-agent/orders"
    pgpass = true
    user   = "app@my-proj.iam.gserviceaccount.com"
  }
}
