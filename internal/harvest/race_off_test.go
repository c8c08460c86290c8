//go:build !race

package harvest

const raceEnabled = false
