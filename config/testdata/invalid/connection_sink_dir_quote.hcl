instance "cloudsql" "orders" {
  project  = "my-proj"
  instance = "orders-pg"
  connection { user = "app" }
  sink "file" { dir = "/srv/o'brien/orders" }
}
