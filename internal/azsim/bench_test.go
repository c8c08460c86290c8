package azsim_test

import (
	"context"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/compute/armcompute/v8"
	"github.com/vmrescue/vmrescue/internal/azsim"
)

func benchGet(b *testing.B, c clients) {
	ctx := context.Background()
	opts := &armcompute.VirtualMachinesClientGetOptions{Expand: to.Ptr(armcompute.InstanceViewTypesInstanceView)}
	for b.Loop() {
		if _, err := c.vms.Get(ctx, appRG, webVM, opts); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVMGetInProcess is one VM GET with instance view through the SDK pipeline and the
// in-process transport.
func BenchmarkVMGetInProcess(b *testing.B) {
	sim, err := azsim.New(nil, azsim.Options{Latency: azsim.LatencyTable{}})
	if err != nil {
		b.Fatal(err)
	}
	benchGet(b, newClients(b, sim.SubscriptionID(), sim.ClientOptions()))
}

// BenchmarkVMGetHTTP is the same GET over loopback HTTP through Handler.
func BenchmarkVMGetHTTP(b *testing.B) {
	sim, base := serveB(b)
	benchGet(b, newClients(b, sim.SubscriptionID(), azsim.EndpointClientOptions(base)))
}

// BenchmarkDeallocateStartLRO is a deallocate and a start, each polled to completion, in-process.
func BenchmarkDeallocateStartLRO(b *testing.B) {
	sim, err := azsim.New(nil, azsim.Options{Latency: azsim.LatencyTable{}})
	if err != nil {
		b.Fatal(err)
	}
	c := newClients(b, sim.SubscriptionID(), sim.ClientOptions())
	ctx := context.Background()
	for b.Loop() {
		p, err := c.vms.BeginDeallocate(ctx, appRG, webVM, nil)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := p.PollUntilDone(ctx, nil); err != nil {
			b.Fatal(err)
		}
		s, err := c.vms.BeginStart(ctx, appRG, webVM, nil)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := s.PollUntilDone(ctx, nil); err != nil {
			b.Fatal(err)
		}
	}
}
