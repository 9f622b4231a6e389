//! The ClusterRole and Role in `templates/kubernetes/bgpd.yaml` against the requests the datastore makes.
