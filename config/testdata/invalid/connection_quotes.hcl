instance "cloudsql" "orders" {
  project  = "my-proj"
  instance = "orders-pg"
  connection {
    user   = "o'brien"
    dbname = "say \"hi\""
  }
  sink "file" { dir = "/var/lib/dbcert-agent/orders" }
}
