instance "cloudsql" "orders" {
  project  = "my-proj"
  instance = "orders-pg"
  sink "file" { dir = "/var/lib/dbcert-agent/orders" }
  hook "exec" {
    command = ["/usr/bin/systemctl", "reload", "myapp"]
    timeout = "30 seconds"
  }
}
