instance "cloudsql" "orders" {
  project  = "my-proj"
  instance = "orders-pg"
  connection {
    user = "app"
    host = "db.internal/5432"
  }
  sink "file" {
    dir = "/var/lib/dbcert-agent/orders"

  }
}
