"""The hardware abstraction layer: the maintenance-port wire format, the transfer engine and the jig drivers.

Never imports `station`.
"""
