instance "cloudsql" "orders" {
  project  = env("DBCERT_TEST_UNSET_VARIABLE")
  instance = "orders-pg"
  sink "file" { dir = "/var/lib/dbcert-agent/orders" }
}
