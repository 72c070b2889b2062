instance "cloudsql" "orders" {
  project  = "my-proj"
  instance = "orders-pg"

  sink "file" {
    dir = "/var/lib/dbcert-agent/orders"
    pkcs12 { pasword_file = "/etc/dbcert-agent/keystore.pass" }
  }
}
