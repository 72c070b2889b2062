instance "cloudsql" "orders" {
  project  = "my-proj"
  instance = "orders-pg"
  connection { user = "app" }
  connection { user = "other" }
  sink "file" {
    dir = "/var/lib/dbcert-agent/orders"

  }
}
