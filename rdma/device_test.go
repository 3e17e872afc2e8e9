package rdma

import (
	"net/netip"
	"slices"
	"testing"
)

// netdevAddrs reads a netdev's addresses over rtnetlink, with prefix lengths.
func TestNetdevAddrs(t *testing.T) {
	addrs, err := netdevAddrs("lo")
	if err != nil {
		t.Fatal(err)
	}
	if want := netip.MustParsePrefix("127.0.0.1/8"); !slices.Contains(addrs, want) {
		t.Errorf("lo: %v; want %v among them", addrs, want)
	}
	if _, err := netdevAddrs("nosuch0"); err == nil {
		t.Error("nosuch0: no error")
	}
}

// DeviceRemoved tells a device the kernel lists (rdma netlink) from one it
// does not; deleting a device under a copy is cmd/rxfer's
// TestRDMALinkDeleteDuringCopy.
func TestDeviceRemoved(t *testing.T) {
	if DeviceRemoved("") {
		t.Error(`DeviceRemoved(""): true; want false (cannot tell)`)
	}
	requireDevice(t)
	inv, err := Inventory()
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range inv {
		if DeviceRemoved(d.Name) {
			t.Errorf("DeviceRemoved(%q): true for a listed device", d.Name)
		}
	}
	if !DeviceRemoved("nosuch0") {
		t.Error(`DeviceRemoved("nosuch0"): false; want true`)
	}
}
