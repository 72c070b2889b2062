instance "cloudsql" "orders" {
  project  = "my-proj"
  instance = "orders-pg"
  sink "file" { dir = "/var/lib/dbcert-agent/orders" }
  hook "exec" {
    command = ["/bin/true"]
    env = {
      DBCERT_CERT_FILE = "/tmp/other.pem"
    }
  }
}
