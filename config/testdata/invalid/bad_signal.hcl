instance "cloudsql" "orders" {
  project  = "my-proj"
  instance = "orders-pg"
  sink "file" { dir = "/var/lib/dbcert-agent/orders" }
  hook "signal" {
    pid_file = "/run/pgbouncer/pgbouncer.pid"
    signal   = "SIGHUPP"
  }
}
