package lock_test

import (
	"context"
	"testing"

	"github.com/vmrescue/vmrescue/internal/azurite/azuritetest"
	"github.com/vmrescue/vmrescue/internal/lock"
)

// TestFirstLockCreatesTheContainer: a lock taken before the container exists (the handler creates
// it in the background at start) still succeeds.
func TestFirstLockCreatesTheContainer(t *testing.T) {
	l := lock.New(azuritetest.Client(t), azuritetest.Container(t, "nolocks"))
	holder, ok, err := l.AcquireVM(context.Background(), testVM, "inc-20261120-031407-aaaa01")
	if err != nil || !ok || holder != "inc-20261120-031407-aaaa01" {
		t.Fatalf("AcquireVM on a missing container = %q %v %v", holder, ok, err)
	}
}
