//go:build !race

package service_test

// raceEnabled tells the OpenAPI status check to ask go list for the race
// build, whose export data the cache already holds.
const raceEnabled = false
