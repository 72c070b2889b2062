instance "cloudsql" "orders" {
  project  = "my-proj"
  instance = "orders-pg"
  sink "file" { dir = "/var/lib/dbcert-agent/orders" }
  hook "exec" {
    command = ["/bin/true"]
    env = {
      APP_MODES = ["reload", "restart"]
    }
  }
}
