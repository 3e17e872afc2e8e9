package rdma

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/Mellanox/rdmamap"
	"github.com/jsimonetti/rtnetlink/v2"
	"github.com/rxfer/rxfer/verbs"
	"github.com/vishvananda/netlink"
)

// Sentinel errors, for errors.Is.
var (
	// ErrUnavailable means RDMA cannot be used on this node (or with these
	// [Options]); it is wrapped with the reason: no device, port down, no RoCE
	// v2 GID, a build without cgo, ...
	ErrUnavailable = errors.New("rdma: unavailable")

	// ErrMismatch means the two endpoints cannot talk to each other; the
	// message names what differs (GID family, MTU, ...).
	ErrMismatch = errors.New("rdma: endpoints do not match")
)

// AutoGID in [Options].GIDIndex asks for automatic GID selection.
const AutoGID = -1

// Options select the local device; zero values mean automatic.
//
// GIDIndex 0 also means automatic, so that the zero Options are automatic: on
// RoCE, index 0 is always the port's default link-local (fe80::) GID, which
// automatic selection still picks when it is the only RoCE v2 GID that fits.
type Options struct {
	Device   string // e.g. "rxe0"; "" = the first usable device
	GIDIndex int    // AutoGID (or 0) = the RoCE v2 GID whose address family/subnet reaches the peer
	Port     uint8  // 0 = 1
}

func (o Options) port() uint8 {
	if o.Port == 0 {
		return 1
	}
	return o.Port
}

func (o Options) autoGID() bool { return o.GIDIndex <= 0 }

// DeviceStatus describes one verbs device port, for `rxfer devices` and the
// node information a daemon reports.
//
// Similar to: ibv_devinfo; rdma link show; show_gids
type DeviceStatus struct {
	Name      string
	Port      uint8
	State     string // e.g. "PORT_ACTIVE"
	LinkLayer string // e.g. "Ethernet"
	ActiveMTU int    // bytes
	Netdev    string
	Addrs     []netip.Prefix // the netdev's addresses
	GIDs      []GIDStatus    // RoCE v2 GIDs
	Usable    bool
	Reason    string // why not usable
}

// GIDStatus is one RoCE v2 GID table entry.
type GIDStatus struct {
	Index int
	Type  string // e.g. "RoCE v2"
	GID   string
	Addr  netip.Addr // the IP address the GID maps to (IPv4 for ::ffff:a.b.c.d)
}

// UnavailableReason is err's text without the leading "rdma: unavailable: "
// label, for places that already say RDMA is unavailable and want only why.
func UnavailableReason(err error) string {
	return strings.TrimPrefix(err.Error(), ErrUnavailable.Error()+": ")
}

// unavailable wraps ErrUnavailable with a reason.
func unavailable(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrUnavailable, fmt.Sprintf(format, args...))
}

// devices lists the verbs devices, mapping "none" and "not built with cgo" to
// ErrUnavailable.
func devices() ([]verbs.DeviceInfo, error) {
	devs, err := verbs.Devices()
	switch {
	case errors.Is(err, verbs.ErrNoDevice):
		return nil, fmt.Errorf("%w: no RDMA device on this node (for Soft-RoCE: rdma link add rxe0 type rxe netdev IFACE): %w", ErrUnavailable, err)
	case errors.Is(err, verbs.ErrNotSupported):
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	case err != nil:
		return nil, fmt.Errorf("%w: listing RDMA devices: %w", ErrUnavailable, err)
	}
	return devs, nil
}

// Inventory describes every port of every verbs device. With no device (or no
// RDMA support in the kernel or the build) it returns an error wrapping
// ErrUnavailable that says so.
func Inventory() ([]DeviceStatus, error) {
	devs, err := devices()
	if err != nil {
		return nil, err
	}
	var out []DeviceStatus
	for _, d := range devs {
		ctx, err := verbs.Open(d.Name)
		if err != nil {
			out = append(out, DeviceStatus{Name: d.Name, Port: 1, Reason: fmt.Sprintf("cannot open: %v", err)})
			continue
		}
		ports := 1
		if da, err := ctx.QueryDevice(); err == nil && da.PhysPortCount > 0 {
			ports = da.PhysPortCount
		}
		for p := 1; p <= ports; p++ {
			st, _ := portStatus(ctx, uint8(p))
			out = append(out, st)
		}
		ctx.Close()
	}
	return out, nil
}

// gidEntry is a usable GID with the address it maps to.
type gidEntry struct {
	verbs.GIDEntry
	addr netip.Addr
}

// portStatus describes one port of an open device and returns its usable
// RoCE v2 GIDs.
func portStatus(ctx *verbs.Context, port uint8) (DeviceStatus, []gidEntry) {
	st := DeviceStatus{Name: ctx.Name(), Port: port}
	pa, err := ctx.QueryPort(port)
	if err != nil {
		st.Reason = fmt.Sprintf("cannot query port %d: %v", port, err)
		return st, nil
	}
	st.State, st.LinkLayer, st.ActiveMTU = pa.State.String(), pa.LinkLayer.String(), pa.ActiveMTU.Bytes()
	table, err := ctx.GIDTable(port)
	if err != nil {
		st.Reason = fmt.Sprintf("cannot read the GID table of port %d: %v", port, err)
		return st, nil
	}
	var gids []gidEntry
	for _, e := range table {
		if st.Netdev == "" && e.Netdev != "" {
			st.Netdev = e.Netdev
		}
		if e.Type != verbs.GIDTypeRoCEv2 || e.GID.IsZero() {
			continue
		}
		a, ok := netip.AddrFromSlice(e.GID.IP().To16())
		if !ok {
			continue
		}
		a = a.Unmap()
		gids = append(gids, gidEntry{e, a})
		st.GIDs = append(st.GIDs, GIDStatus{Index: e.Index, Type: e.Type.String(), GID: e.GID.String(), Addr: a})
	}
	if st.Netdev == "" {
		st.Netdev = netdevOf(st.Name)
	}
	if st.Netdev != "" {
		st.Addrs, _ = netdevAddrs(st.Netdev)
	}
	switch {
	case pa.State != verbs.PortActive:
		st.Reason = fmt.Sprintf("port %d is %v, not PORT_ACTIVE (is %s up?)", port, pa.State, orUnknown(st.Netdev))
	case pa.LinkLayer != verbs.LinkLayerEthernet:
		st.Reason = fmt.Sprintf("port %d link layer is %v; rxfer needs RoCE v2 (Ethernet)", port, pa.LinkLayer)
	case len(gids) == 0:
		st.Reason = fmt.Sprintf("port %d has no RoCE v2 GID (does %s have an IP address?)", port, orUnknown(st.Netdev))
	case pa.ActiveMTU.Bytes() == 0:
		st.Reason = fmt.Sprintf("port %d has no valid active MTU (%d)", port, int(pa.ActiveMTU))
	default:
		st.Usable = true
	}
	return st, gids
}

func orUnknown(netdev string) string {
	if netdev == "" {
		return "its network device"
	}
	return netdev
}

// netdevOf finds the network device of an RDMA device through sysfs
// (rdmamap), for ports whose GID table names none.
func netdevOf(rdmaDev string) string {
	ifs, err := net.Interfaces()
	if err != nil {
		return ""
	}
	for _, ifc := range ifs {
		if d, err := rdmamap.GetRdmaDeviceForNetdevice(ifc.Name); err == nil && d == rdmaDev {
			return ifc.Name
		}
	}
	return ""
}

// netdevAddrs returns the addresses of a network device.
//
// Similar to: ip -br addr show dev NETDEV
func netdevAddrs(netdev string) ([]netip.Prefix, error) {
	ifc, err := net.InterfaceByName(netdev)
	if err != nil {
		return nil, err
	}
	conn, err := rtnetlink.Dial(nil)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	msgs, err := conn.Address.List()
	if err != nil {
		return nil, err
	}
	var out []netip.Prefix
	for _, m := range msgs {
		if m.Index != uint32(ifc.Index) || m.Attributes == nil {
			continue
		}
		ip := m.Attributes.Local
		if ip == nil {
			ip = m.Attributes.Address
		}
		a, ok := netip.AddrFromSlice(ip)
		if !ok {
			continue
		}
		out = append(out, netip.PrefixFrom(a.Unmap(), int(m.PrefixLength)))
	}
	return out, nil
}

// Check reports whether RDMA is usable with opt (nil) or why not (an error
// wrapping ErrUnavailable).
func Check(opt Options) error {
	sel, err := selectDevice(opt, netip.Addr{})
	if err != nil {
		return err
	}
	return sel.ctx.Close()
}

// selection is an opened device with the port and GID chosen for a peer.
type selection struct {
	ctx   *verbs.Context
	port  uint8
	gid   gidEntry
	mtu   verbs.MTU
	score int // how well the GID fits the peer (see chooseGID)
}

// selectDevice opens opt.Device, or the usable device whose GID fits peer
// best (the first of equals), and picks the GID to reach peer. The caller
// closes sel.ctx.
func selectDevice(opt Options, peer netip.Addr) (*selection, error) {
	names := []string{opt.Device}
	if opt.Device == "" {
		devs, err := devices()
		if err != nil {
			return nil, err
		}
		names = names[:0]
		for _, d := range devs {
			names = append(names, d.Name)
		}
	}
	var best *selection
	var reasons []error
	for _, name := range names {
		sel, err := selectOn(name, opt, peer)
		switch {
		case err != nil:
			reasons = append(reasons, err)
		case best == nil || sel.score > best.score:
			if best != nil {
				best.ctx.Close()
			}
			best = sel
		default:
			sel.ctx.Close()
		}
	}
	switch {
	case best != nil:
		return best, nil
	case len(reasons) == 1:
		return nil, reasons[0]
	}
	why := make([]string, len(reasons))
	for i, r := range reasons {
		why[i] = UnavailableReason(r)
	}
	return nil, fmt.Errorf("%w: no usable device: %s", ErrUnavailable, strings.Join(why, "; "))
}

func selectOn(name string, opt Options, peer netip.Addr) (*selection, error) {
	ctx, err := verbs.Open(name)
	if err != nil {
		if errors.Is(err, verbs.ErrNoDevice) || errors.Is(err, verbs.ErrNotSupported) {
			return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
		}
		return nil, fmt.Errorf("%w: opening %s: %w", ErrUnavailable, name, err)
	}
	st, gids := portStatus(ctx, opt.port())
	if !st.Usable {
		ctx.Close()
		return nil, unavailable("%s: %s", ctx.Name(), st.Reason)
	}
	pa, err := ctx.QueryPort(opt.port())
	if err != nil {
		ctx.Close()
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	sel := &selection{ctx: ctx, port: opt.port(), mtu: pa.ActiveMTU}
	if !opt.autoGID() {
		i := slices.IndexFunc(gids, func(g gidEntry) bool { return g.Index == opt.GIDIndex })
		if i < 0 {
			ctx.Close()
			return nil, unavailable("%s port %d: GID index %d is not a RoCE v2 GID (have %v)", ctx.Name(), sel.port, opt.GIDIndex, st.GIDs)
		}
		sel.gid = gids[i]
		return sel, nil
	}
	g, score := chooseGID(gids, st.Addrs, peer)
	if score < 0 {
		ctx.Close()
		return nil, unavailable("%s port %d: no RoCE v2 GID of the address family of %v (have %v)", ctx.Name(), sel.port, peer, st.GIDs)
	}
	sel.gid, sel.score = g, score
	return sel, nil
}

// chooseGID picks the GID to reach peer: one whose address is on a subnet of
// the netdev that contains peer, else one of peer's address family (global
// before link-local). Without a peer it prefers IPv4, then global IPv6. The
// score says how good the choice is (higher is better); it is -1 if no GID
// fits.
func chooseGID(gids []gidEntry, addrs []netip.Prefix, peer netip.Addr) (gidEntry, int) {
	peer = peer.Unmap()
	best, bestScore := gidEntry{}, -1
	for _, g := range gids {
		score := 0
		switch {
		case !peer.IsValid():
			if g.addr.Is4() {
				score = 3
			} else if !g.addr.IsLinkLocalUnicast() {
				score = 2
			} else {
				score = 1
			}
		case g.addr.Is4() != peer.Is4():
			continue // RoCE v2 cannot cross address families
		default:
			score = 1
			if !g.addr.IsLinkLocalUnicast() {
				score = 2
			}
			for _, p := range addrs {
				if p.Addr() == g.addr && p.Contains(peer) {
					score = 4
				}
			}
			if g.addr == peer {
				score = 4 // loopback onto this very device
			}
		}
		if score > bestScore {
			best, bestScore = g, score
		}
	}
	return best, bestScore
}

// DeviceRemoved reports whether the RDMA device name is no longer in the
// kernel's device list (rdma netlink): a device being deleted (`rdma link
// delete`) leaves the list at once, while the delete still waits for every
// process to close it. Idle holders (parked connections) use it to let go.
// Sysfs cannot tell: /sys/class/infiniband/NAME stays until that wait ends.
// It is false when it cannot tell (netlink unavailable, an interrupted dump,
// no name).
//
// Similar to: rdma link show NAME
func DeviceRemoved(name string) bool {
	if name == "" {
		return false
	}
	links, err := netlink.RdmaLinkList()
	if err != nil {
		return false
	}
	return !slices.ContainsFunc(links, func(l *netlink.RdmaLink) bool { return l.Attrs.Name == name })
}
