instance "cloudsql" "orders" {
  project  = "my-proj"
  instance = "orders-pg"
  connection { dbname = "app " }
  sink "file" { dir = "/var/lib/dbcert-agent/orders" }
}
