instance "geminidb" "cache" {
  project_id  = "0123456789abcdef0123456789abcdef"
  instance_id = "a1b2c3d4e5f64a7b8c9d0e1f2a3b4c5din06"
  schedule    = "0 0 30 2 *"
  sink "file" { dir = "/etc/ssl/geminidb-cache" }
}

credentials "huaweicloud" "default" {
  region     = "cn-north-4"
  token_file = "/run/secrets/hw-token"
}
