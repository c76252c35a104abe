package config
func settingDocs() map[string]string { return nil }
