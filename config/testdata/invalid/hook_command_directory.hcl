instance "cloudsql" "orders" {
  project  = "my-proj"
  instance = "orders-pg"
  sink "file" { dir = "/var/lib/dbcert-agent/orders" }
  hook "exec" {
    command = ["/etc", "reload"]
  }
}
