"""Starting the federation: Flower simulation on Ray, the in-process loop, deployments, SuperLinks and the processes they start."""
