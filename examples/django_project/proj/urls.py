"""No views: the example shows the workers; the web role serves what your project serves."""

urlpatterns: list = []
