"""Using trained layers: probabilities and image scores, the AP protocol, heat maps,
localization and the methods of `compare`. Imports the layers below."""
