"""The other end of the wire: simulated hubs and jigs, link emulation, faults, a pyusb backend, a DSP bridge.

Reuses `drivers`' wire format and `firmware_catalog`'s image parser; never imports `station`.
"""
