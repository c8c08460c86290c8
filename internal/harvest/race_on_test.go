//go:build race

package harvest

// raceEnabled: the race detector multiplies memory use, so peak RSS means nothing under it.
const raceEnabled = true
